"""The node agent and the HTTP transport that talks to it: the remote half of Burla.

    protocol.py   what travels on the wire: paths, frames, message checks, versions
    jobs.py       one job on a node: its input queue, its share of slots, its replayable events
    agent.py      the aiohttp service that runs on every machine (`burla node start`)
    client.py     the caller's side: the `http` transport, one session per node and job

Start with agent.py's docstring for a picture of the whole flow.
"""
