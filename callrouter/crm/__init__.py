"""Caller names from the company's CRM, within a strict time budget per call."""
