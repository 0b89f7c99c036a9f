"""HTTP and WebSocket adapters over the hub services. The only hub-side users of aiohttp (with app and web)."""
