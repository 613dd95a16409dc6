"""What the other services may ask of mailbox-store, as Python Protocols.

`api.py` holds the types and Protocols; `client.py` implements them over mailbox-store's REST API;
`memory.py` implements them in memory for protocol tests of the services that use the store.
"""
