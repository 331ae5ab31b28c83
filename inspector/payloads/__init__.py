"""Every message this project puts on a wire: verdicts, rejects, status, health, commands, responses."""
