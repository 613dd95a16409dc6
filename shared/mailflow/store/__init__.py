"""What the other services may ask of mailbox-store, as Python Protocols.

`api.py` holds the types and Protocols, `client.py` implements them over mailbox-store's REST API, and
`search.py` holds the SEARCH criteria and their one evaluator. There is no second implementation for
tests: they run on the real store (tests/support/store.py).
"""
