// The openai-node SDK against chatcompat's /v1/responses, for
// tests/live/test_responses_clients.py: responses.create, responses.stream, a function
// tool round trip by previous_response_id, and a streamed tool call. Prints what it
// received as JSON (the objects as the SDK returned them, every stream event) for the
// test to check.
'use strict';

const OpenAI = require(process.env.OPENAI_NODE_PACKAGE);

async function main() {
  const client = new OpenAI({
    baseURL: process.env.BASE_URL,
    apiKey: process.env.API_KEY,
    maxRetries: 0,
    timeout: 20000,
  });
  const mark = process.env.MARK;
  const tool = JSON.parse(process.env.TOOL);

  const created = await client.responses.create({ model: 'openclaw', input: `hello ${mark}` });

  const events = [];
  const stream = client.responses.stream({ model: 'openclaw', input: `stream ${mark}` });
  for await (const event of stream) {
    events.push(event);
  }
  const final = await stream.finalResponse();

  const asked = await client.responses.create({
    model: 'openclaw',
    input: `${process.env.CALL} weather in Oslo? ${mark}`,
    tools: [tool],
  });
  const call = asked.output.find((item) => item.type === 'function_call');
  const answer = await client.responses.create({
    model: 'openclaw',
    previous_response_id: asked.id,
    input: [{ type: 'function_call_output', call_id: call.call_id, output: 'rain' }],
    tools: [tool],
  });

  const toolEvents = [];
  const toolStream = client.responses.stream({
    model: 'openclaw',
    input: `${process.env.CALL} streamed call ${mark}`,
    tools: [tool],
  });
  for await (const event of toolStream) {
    toolEvents.push(event);
  }
  const toolFinal = await toolStream.finalResponse();

  process.stdout.write(
    JSON.stringify({ created, events, final, tool: asked, answer, toolEvents, toolFinal }),
  );
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
