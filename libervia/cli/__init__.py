"""``li``: the command-line frontend of the Libervia backend (standard library only)."""
