"""Who a journey is for: contacts, their import, and (later) segments and attributes."""
