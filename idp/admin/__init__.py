"""Admin console (grows with the admin issue): for now the SMS outbox reader."""
