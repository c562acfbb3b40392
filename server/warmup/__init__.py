"""model_warmup: samples checked in the config, built at load and run on every instance before serving."""
