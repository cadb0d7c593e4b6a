"""The web app's routes, one module per role's pages: sign-in, clinicians' work, campaigns, review, admin."""
