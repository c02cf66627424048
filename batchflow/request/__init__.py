"""Records -> requests: the Jinja sandbox (``render``), templates compiled to Python (``compiled``), the wire form
google-genai sends (``wire``) and the canonical form a Vertex echo is matched by (``canonical``)."""
