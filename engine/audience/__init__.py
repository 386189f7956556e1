"""The audience: contacts, what they did, and what is computed about them."""
