"""The HTTP routes, one module per family; wire models (protocol, chat_protocol) beside them.
Routes stay thin: parse, hand the request to serving/, shape the response."""
