"""The application package of the function app: everything but the HTTP and timer handlers."""
