"""The application on top of the services: the command line, serve, the embedded runner, replay and export,
wired by one composition root (`app.bootstrap`)."""
