"""The ``pi`` backend: the Pi coding agent in RPC mode, as a per-worker pool of warm,
isolated processes.

- :mod:`.agent`: :class:`~.agent.PiAgent`, the backend (options, one run per prompt);
- :mod:`.pool`: the processes of one agent in one worker, and waiting for a free one;
- :mod:`.process`: one ``pi --mode rpc`` child, its JSON lines in and out;
- :mod:`.turn`: one run on a process: the session file, the prompt, the events.
"""
