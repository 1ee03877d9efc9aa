"""One module per ``netmon`` sub-command, each defining ``command``; see netmon.cli."""
