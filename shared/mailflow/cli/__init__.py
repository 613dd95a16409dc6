"""The `mailflow` command: run the stack locally and administer domains, users, aliases and the queue."""
