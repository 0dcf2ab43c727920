"""fedsafe's Hydra configs, shipped as package data so an installed fedsafe finds them."""
