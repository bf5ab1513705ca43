"""The HTTP prediction service (image_transfer.serve, on LitServe): what a request may carry (uploads.py), the model
in each worker process (api.py), the images of concurrent requests as one batch (batches.py). Only the entry point
imports these, once it has checked that the serving packages are installed."""
