"""fedsafe primitives shared by the server, the sites and the simulations; imports no project package."""
