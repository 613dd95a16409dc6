"""Mailflow's common code: settings, contracts, logging, NATS and HTTP plumbing shared by the services."""
