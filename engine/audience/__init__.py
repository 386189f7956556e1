"""The audience: who the contacts are and which segments they are in, computed in the database."""
