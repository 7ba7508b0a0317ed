"""Messages to people (missed-call SMS, package alerts): the durable outbox, its rules and its sender."""
