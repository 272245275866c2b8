"""The node agent and the HTTP transport that talks to it: the remote half of Burla.

    protocol.py   what travels on the wire: paths, frames, job requests, message checks, versions
    capacity.py   what a node offers, and how its jobs share it (never more calls than fit)
    jobs.py       one job on a node: its input queue and its replayable events
    agent.py      the aiohttp service that runs on every machine (`burla node start`)
    settings.py   the agent's configuration and its safety checks
    serve.py      listening and stopping
    loop.py       the caller's event loop thread for node traffic (and ending jobs at exit)
    client.py     the caller's requests to one node
    session.py    the caller's side of one job on one node (a NodeSession)
    transport.py  the `http` transport, configured by the backend that uses it
    testing.py    agents as local subprocesses, for tests and benchmarks

Start with agent.py's docstring for a picture of the whole flow.
"""
