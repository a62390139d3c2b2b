"""The `msaf` command line. It lives with the orchestration (it starts flows), so the `pipeline`
library never imports `flows`. One module per group of commands, each a thin call into the library;
they are registered here, in the order `msaf --help` lists them."""

from flows.cli import doctor, labels, models, surveys, training
from flows.cli.app import app, main

for command in (
    training.prepare,
    training.train,
    training.evaluate,
    surveys.survey,
    surveys.mosaic,
    surveys.report,
    surveys.compare,
    surveys.history,
    surveys.schedule,
):
    app.command()(command)
app.add_typer(labels.labels_app, name="labels")
app.add_typer(models.models_app, name="models")
app.command()(doctor.doctor)

__all__ = ["app", "main"]
