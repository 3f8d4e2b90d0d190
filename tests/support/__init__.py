"""What the tests share that is not a fixture: helpers, servers, and the modules
the processes they start import (Celery apps, worker task functions)."""
