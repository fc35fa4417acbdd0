"""``POST /cloudevents/<channel>``: signed CloudEvents in, and refusals reported to the channel's URL."""
