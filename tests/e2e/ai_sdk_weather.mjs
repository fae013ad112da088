// The AI SDK's default OpenAI model (the Responses API) with one tool, through the gateway.
import { generateText, streamText, tool, stepCountIs } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { z } from "zod";

const [baseURL, model, mode] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey: "sk-caller" });
const calls = [];
const options = {
  model: openai(model),
  prompt: "What is the weather in Lima?",
  tools: {
    get_weather: tool({
      description: "The weather in a city",
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => { calls.push(city); return `19C in ${city}, cloudy`; },
    }),
  },
  stopWhen: stepCountIs(3),
  providerOptions: { openai: { store: false } },
};
let text;
if (mode === "stream") {
  const result = streamText(options);
  text = await result.text;
} else {
  text = (await generateText(options)).text;
}
console.log(JSON.stringify({ text, calls }));
