"""The REST API (``eventbus api``): CherryPy routes over the master bus, Salt ``rest_cherrypy`` style."""
