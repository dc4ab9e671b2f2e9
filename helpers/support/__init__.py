"""Hand-written support code for the course (downloads, data cache, devices, metrics).

Unlike the other modules of `helpers`, nothing here is exported from a notebook."""
