"""The Functions app (v2 programming model): one FunctionApp that registers the blueprints."""

import azure.functions as func

from shared.entrypoints.console import bp as console
from shared.entrypoints.events import bp as events
from shared.entrypoints.http_api import bp as http_api
from shared.entrypoints.reconcile import bp as reconcile
from shared.entrypoints.tasks import bp as tasks

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(events)
app.register_functions(tasks)
app.register_functions(reconcile)
app.register_functions(http_api)
app.register_functions(console)
