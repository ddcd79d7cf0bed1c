"""A site worker's side of a round: everything over HTTP with the site token, no database.

`rounds.train_round` fetches the job bundle once per job (cached under the worker's data
root, `files`), fetches the round's global weights and checks their sha256 (`api`), runs the
job's round in the sandboxed runner (a child process of that job's own, kept across its
rounds, that sees neither the site token nor any server secret, and only this worker's GPUs:
`processes`), and uploads the update with its samples, metrics and log. A heartbeat thread
(`heartbeat`) tells the server the worker is alive and idle or busy. `config` is the running
worker's configuration (from `resonfl_server.workers.settings`) and the GPUs it may use.
"""
