"""fedsafe primitives shared by the server, sites and simulations; imports no project package."""
