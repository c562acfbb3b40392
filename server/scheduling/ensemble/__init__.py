"""Ensembles (`platform: "ensemble"`): a request runs as a DAG of steps on other models.

`config_fields`: which config fields an ensemble has and which only an ensemble may have; `graph`: the steps
built and checked from the ensemble's own config; `composing_models`: the models that the steps name, made to
serve before the ensemble loads and checked against it (`composing_checks`); `scheduler`: a request run
through the steps.
"""
