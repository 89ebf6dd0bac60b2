"""The plugin author's kit: the contract checks as test assertions (`testing`) and `ecgbench check` (`check`)."""
