"""Who a journey is for: contacts, their import, segments and computed attributes."""
