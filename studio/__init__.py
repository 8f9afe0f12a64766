"""Talking to Label Studio: project setup from templates, connecting the backend, webhooks."""
