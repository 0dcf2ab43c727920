"""The coordinator's deployment: its config (`config`), CA and TLS files (`certs`), Flower's
processes (`process`) and CLI (`flower`), resuming a run (`resume`) and the `fedsafe server`
commands (`cli`)."""
