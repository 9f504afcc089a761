"""What a session builds and plugins read and change: the session and transaction
contexts, the header section, the message and its Authentication-Results."""
