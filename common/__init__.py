"""What every package of the project shares: the user-error convention and file handling."""
