"""A request's life between the route and the engine: validated and prepared, admitted,
generated (past the context window as nanoGPT does), cut short by deadlines or a departed
client, and settled into an OpenAI-shaped result."""
