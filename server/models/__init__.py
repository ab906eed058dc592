"""The models a server serves and their versions: what a version is (version), a model that
reloads without failing a request (live), and --watch, which follows a training run (watch)."""
