"""OPC UA server for PLCs and SCADA (optional extra ``opcua``: ``asyncua``); see docs/opcua.md.

``server``: the address space, methods and ResultReady events; ``arguments``: method arguments
as status codes; ``users``: user names and password hashes.
"""
