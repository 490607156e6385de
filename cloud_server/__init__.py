"""The cloud server: sessions, validation, tail execution, health and metrics."""
