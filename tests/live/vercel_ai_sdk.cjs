// The Vercel AI SDK (npm `ai` + `@ai-sdk/openai`) against chatcompat, for
// tests/live/test_vercel_ai_sdk.py. One case per run, given as JSON in CASE:
//   {kind, provider: "chat" | "responses", model, prompt(s), providerOptions, headers}
// kind: generate (generateText), stream (streamText), tools (a zod tool and
// stopWhen: stepCountIs(3), generated or streamed), conversation (generateText turn
// after turn, each with the whole conversation as the SDK keeps it). Prints what the
// SDK returned as JSON for the test to check; any error (also one a stream reports
// as an error part) exits 1 with it on stderr.
'use strict';

const path = require('node:path');

const modules = process.env.AI_SDK_MODULES;
const { generateText, streamText, tool, stepCountIs } = require(path.join(modules, 'ai'));
const { createOpenAI } = require(path.join(modules, '@ai-sdk/openai'));
const { z } = require(path.join(modules, 'zod'));

// The SDK prints its warnings on stdout; they come back in each result instead.
globalThis.AI_SDK_LOG_WARNINGS = false;

const spec = JSON.parse(process.env.CASE);
const openai = createOpenAI({
  baseURL: process.env.BASE_URL,
  apiKey: process.env.API_KEY,
  headers: spec.headers,
});
// openai(model) is the Responses API in v5 and later; openai.chat(model) chat completions.
const model = spec.provider === 'chat' ? openai.chat(spec.model) : openai(spec.model);
const options = { model, providerOptions: spec.providerOptions, maxRetries: 0 };

// What each result says, in plain JSON (the SDK's objects hold functions and streams).
function summary(result) {
  return {
    text: result.text,
    reasoningText: result.reasoningText,
    finishReason: result.finishReason,
    usage: result.usage,
    totalUsage: result.totalUsage,
    responseId: result.response.id,
    responseHeaders: result.response.headers,
    responseBody: result.response.body, // generateText's only
    providerMetadata: result.providerMetadata,
    warnings: result.warnings,
    requestBody: result.request.body,
    steps: result.steps.map((step) => ({
      finishReason: step.finishReason,
      text: step.text,
      toolCalls: step.toolCalls.map(({ toolCallId, toolName, input }) => ({
        toolCallId,
        toolName,
        input,
      })),
      toolResults: step.toolResults.map(({ toolCallId, output }) => ({ toolCallId, output })),
      requestBody: step.request.body,
    })),
  };
}

// A streamed result, awaited part by part; the text deltas as they came.
async function streamed(result) {
  const deltas = [];
  for await (const part of result.fullStream) {
    if (part.type === 'error') throw part.error;
    if (part.type === 'text-delta') deltas.push(part.text);
  }
  const [text, reasoningText, finishReason, usage, totalUsage, response, providerMetadata] =
    await Promise.all([
      result.text,
      result.reasoningText,
      result.finishReason,
      result.usage,
      result.totalUsage,
      result.response,
      result.providerMetadata,
    ]);
  const steps = await result.steps;
  const request = await result.request;
  return {
    ...summary({
      text,
      reasoningText,
      finishReason,
      usage,
      totalUsage,
      response,
      providerMetadata,
      warnings: await result.warnings,
      request,
      steps,
    }),
    deltas,
  };
}

async function run(request, stream) {
  if (stream) return streamed(streamText(request));
  return summary(await generateText(request));
}

async function main() {
  switch (spec.kind) {
    case 'generate':
    case 'stream':
      return run({ ...options, prompt: spec.prompt }, spec.kind === 'stream');
    case 'tools': {
      const executed = [];
      const getWeather = tool({
        description: 'The weather in a city.',
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          executed.push({ city });
          return `sunny in ${city}`;
        },
      });
      const request = {
        ...options,
        prompt: spec.prompt,
        tools: { get_weather: getWeather },
        stopWhen: stepCountIs(3),
      };
      return { ...(await run(request, spec.stream)), executed };
    }
    case 'conversation': {
      const messages = [];
      const turns = [];
      for (const prompt of spec.prompts) {
        messages.push({ role: 'user', content: prompt });
        const result = await generateText({ ...options, messages });
        messages.push(...result.response.messages);
        turns.push(summary(result));
      }
      return { turns };
    }
    default:
      throw new Error(`unknown case kind ${spec.kind}`);
  }
}

main().then(
  (result) => process.stdout.write(JSON.stringify(result)),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
