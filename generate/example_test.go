package generate_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// Load a checkpoint folder (here the embedded default model's) and stream a greedy
// answer that ends before a stop string.
func ExampleGenerator_Generate() {
	dir, err := models.DefaultDir() // or any Hugging Face checkpoint folder
	if err != nil {
		log.Fatal(err)
	}
	m, err := model.Load(dir, cpu.New())
	if err != nil {
		log.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		log.Fatal(err)
	}
	g := &generate.Generator{Model: m, Tokenizer: tok}
	prompt := tok.Encode("The grass is green. One of the special magic numbers for apple is: 482910. The sky is blue.\n"+
		"What is the special magic number for apple mentioned in the provided text? The special magic number for apple mentioned in the provided text is", true)
	res, err := g.Generate(context.Background(), prompt, generate.Options{
		MaxNewTokens: 16,
		StopStrings:  []string{"."},
		OnText:       func(piece string) { fmt.Fprint(os.Stdout, piece) }, // streamed as it is final
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\nstop: %s; the cache held %d bytes of keys and values\n", res.StopReason, res.KVLivePrefill)
	// Output:
	//  482910
	// stop: stop_string; the cache held 450560 bytes of keys and values
}

// A sampler is greedy at temperature 0 and draws reproducibly from the nucleus otherwise.
func ExampleSampler() {
	logits := []float32{0.5, 3, 2.9, -1}
	greedy := generate.NewSampler(0, 1, 0)
	nucleus := generate.NewSampler(1, 0.4, 42) // token 1 alone has 0.4 of the mass
	fmt.Println(greedy.Sample(logits), nucleus.Sample(logits))
	// Output: 1 1
}
