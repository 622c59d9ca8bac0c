"""The OpenAI-compatible proxy behind `agentrun serve`, for embedding and tests.

```python
from agentrun.proxy import ProxyServer, load_config

async with ProxyServer(load_config("config.yaml"), host="127.0.0.1", port=0) as server:
    print(server.url)
```
"""

from __future__ import annotations

from agentrun._proxy import ProxyServer
from agentrun._proxy_config import ConfigError, Deployment, ProxyConfig, load_config, parse_config

__all__ = ["ConfigError", "Deployment", "ProxyConfig", "ProxyServer", "load_config", "parse_config"]
