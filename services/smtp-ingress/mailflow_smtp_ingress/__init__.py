"""smtp-ingress: takes mail over SMTP (MX, submission, SMTPS) and makes it durable in JetStream before 250."""
