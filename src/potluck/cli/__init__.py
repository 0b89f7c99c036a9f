"""The `potluck` command line."""
