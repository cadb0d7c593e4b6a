"""The Accelerate configs in configs/accelerate/: each loads with accelerate's own reader, and `accelerate
launch` turns it into the mode its name promises (processes, DeepSpeed stage, FSDP sharding). No training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "configs" / "accelerate"

# name -> what the file must say: distributed type, processes, CPU, mixed precision
EXPECTED = {
    "single_gpu": (DistributedType.NO, 1, False, "bf16"),
    "ddp": (DistributedType.MULTI_GPU, 8, False, "bf16"),
    "zero2": (DistributedType.DEEPSPEED, 8, False, "bf16"),
    "zero3": (DistributedType.DEEPSPEED, 8, False, "bf16"),
    "fsdp": (DistributedType.FSDP, 8, False, "bf16"),
    # MULTI_GPU so that `accelerate launch` starts the processes with torchrun (MULTI_CPU would need mpirun)
    "cpu_2proc": (DistributedType.MULTI_GPU, 2, True, "no"),
}


def launched(name: str):
    """The arguments `accelerate launch --config_file <name>.yaml script.py` resolves to."""
    args = launch_command_parser().parse_args(["--config_file", str(FOLDER / f"{name}.yaml"), "train.py"])
    args, _defaults, _ = _validate_launch_command(args)
    return args


def test_the_folder_holds_exactly_the_documented_configs():
    assert {p.stem for p in FOLDER.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_config_loads_with_accelerates_reader(name):
    config = load_config_from_file(str(FOLDER / f"{name}.yaml"))
    assert isinstance(config, ClusterConfig)  # not SageMaker: a local machine
    distributed_type, processes, cpu, precision = EXPECTED[name]
    assert config.distributed_type == distributed_type
    assert config.num_processes == processes
    assert config.use_cpu is cpu
    assert config.mixed_precision == precision
    assert config.num_machines == 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_nested_key_is_one_accelerate_launch_reads(name):
    # `accelerate launch` copies deepspeed_config/fsdp_config keys onto its arguments without checking
    # them: a misspelt key would be silently ignored, so each must be one of the launcher's own flags.
    known = {action.dest for action in launch_command_parser()._actions}
    config = ClusterConfig.from_yaml_file(str(FOLDER / f"{name}.yaml"))
    nested = list(config.deepspeed_config) + [k if k.startswith("fsdp") else f"fsdp_{k}" for k in config.fsdp_config]
    assert not sorted(set(nested) - known)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_file_names_its_own_launch_command(name):
    header = (FOLDER / f"{name}.yaml").read_text(encoding="utf-8")
    assert f"accelerate launch --config_file configs/accelerate/{name}.yaml" in header


def test_single_gpu_runs_one_plain_process():
    args = launched("single_gpu")
    assert not (args.multi_gpu or args.use_deepspeed or args.use_fsdp)
    assert args.num_processes == 1 and args.gpu_ids == "0"


def test_ddp_starts_one_process_per_gpu():
    args = launched("ddp")
    assert args.multi_gpu and not (args.use_deepspeed or args.use_fsdp or args.use_cpu)
    assert args.num_processes == 8 and args.mixed_precision == "bf16"


def test_cpu_2proc_starts_two_processes_on_the_cpu():
    args = launched("cpu_2proc")
    assert args.multi_gpu and args.use_cpu  # torchrun starts two ranks; clinalign puts each on the CPU
    assert args.num_processes == 2 and args.mixed_precision == "no"


@pytest.mark.parametrize(("name", "stage"), [("zero2", 2), ("zero3", 3)])
def test_zero_configs_launch_deepspeed_at_their_stage(name, stage):
    args = launched(name)
    assert args.use_deepspeed and not (args.multi_gpu or args.use_fsdp)
    assert args.zero_stage == stage and args.mixed_precision == "bf16"
    config = ClusterConfig.from_yaml_file(str(FOLDER / f"{name}.yaml"))
    assert config.deepspeed_config["zero_stage"] == stage
    assert config.deepspeed_config["offload_param_device"] == "none"
    # Only ZeRO-3 shards the weights: it must build them sharded and gather them whole when saving.
    assert config.deepspeed_config["zero3_init_flag"] is (stage == 3)
    assert config.deepspeed_config.get("zero3_save_16bit_model", False) is (stage == 3)


def test_fsdp_launches_fsdp2_full_shard_wrapping_each_decoder_layer(monkeypatch):
    args = launched("fsdp")
    assert args.use_fsdp and not (args.multi_gpu or args.use_deepspeed)
    assert str(args.fsdp_version) == "2" and args.fsdp_reshard_after_forward is True

    # What the launched processes see: the launcher's environment, read back by accelerate's FSDP plugin.
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # FSDP2's FULL_SHARD
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # a whole model on save, for a Hugging Face folder


def test_fsdp_wraps_a_layer_class_transformers_has():
    from transformers.models.llama import modeling_llama

    config = ClusterConfig.from_yaml_file(str(FOLDER / "fsdp.yaml"))
    assert hasattr(modeling_llama, config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"])


def test_the_scale_out_guide_names_only_configs_that_exist():
    guide = (ROOT / "docs" / "scale-out.md").read_text(encoding="utf-8")
    named = set(re.findall(r"configs/accelerate/(\w+)\.yaml", guide))
    assert named and named <= set(EXPECTED)
