"""Backend "gcp": a cluster in the user's own Google Cloud project.

So far: `clients` (the one factory of Google clients, pointed at Google or at the stand-in),
`netguard` (the loopback-only guard of tests and the stand-in), `errors`, and `standin/` (Google
Cloud's APIs on 127.0.0.1). Importing this package loads no Google library.
"""
