"""The dbatch page of the Dask dashboard and the Prometheus metrics, fed by run events.

``state`` keeps what the page and the metrics show, in bounded memory (pure);
``relay`` sends a run's events from the driver to the scheduler; ``plugin`` is
the scheduler plugin that receives them and adds the page's routes; ``page``
draws it with Bokeh; ``metrics`` turns the state into Prometheus metrics.
"""
