"""Tools of the demonstration and of the project's upkeep, run as modules from the repository's root so
that they import the project as it is checked out: `python -m scripts.release_weights ...`."""
