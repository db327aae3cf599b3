"""Trees of files: discovery, worker pools and Dask, the runner and its commit, reports."""
